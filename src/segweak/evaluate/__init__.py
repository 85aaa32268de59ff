"""segweak.evaluate subpackage."""
