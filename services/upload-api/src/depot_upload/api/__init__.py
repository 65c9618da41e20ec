"""HTTP entry points of the upload API."""
