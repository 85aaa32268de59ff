"""segweak.report subpackage."""
