"""What the HTTP entry points of the upload API share: the streaming multipart reader."""
