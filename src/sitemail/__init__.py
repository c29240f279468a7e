"""sitemail: one e-mail domain for an organisation spread over several sites.

The package is layered (DESIGN.md section 4); each subpackage states its one job in its docstring.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
