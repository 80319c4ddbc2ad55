"""Engines that score label tokens: one small interface (``base.Engine``), met by the
in-process vLLM engine (``local``) and by a vLLM server reached over HTTP (``remote``).

Analysis, the server and the Ray actor use only that interface, never vLLM or HTTP.
"""
