"""dapsdk: the DAP SDK dap_stream transport and AVReStream streaming system, in Python."""

__version__ = "0.1.0"
