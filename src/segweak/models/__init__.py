"""segweak.models subpackage."""
