"""The batch pipeline (Luigi): score files and nightly synthetic traffic through the SDK, with a quality report.

Talks to the server only through the SDK (transport "batch"); never imports inference/ or database/.
"""
