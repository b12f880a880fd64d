"""SIPREC (RFC 7866): bodies, SDP, metadata and media of the recording server."""
