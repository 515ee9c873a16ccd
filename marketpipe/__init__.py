"""Shared core of marketpipe: settings, queue names, payload contract and database access."""

__version__ = "0.1.0"
