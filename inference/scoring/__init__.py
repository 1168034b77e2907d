"""Scoring: the one score-and-record path every transport takes, and the record/message conversions they share."""
