"""What each of the larger actions does, importable (its action file names the signature and runs it)."""
