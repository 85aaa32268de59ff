"""segweak.data subpackage."""
