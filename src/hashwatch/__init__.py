"""hashwatch: recognise known images again, wherever they turn up."""

__version__ = "0.1.0"
