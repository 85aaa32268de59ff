"""segweak.weak subpackage."""
