"""Recording: the Recorder interface, the prediction log that stores records off the hot path, and its spool."""
