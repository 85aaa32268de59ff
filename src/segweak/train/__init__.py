"""segweak.train subpackage."""
