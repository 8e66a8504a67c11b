"""The bench central server of a site: ledger consumer, balances, signed rules, POS feed."""

from parkedge_sim.central.cli import main
from parkedge_sim.central.db import CentralDB
from parkedge_sim.central.server import CentralServer

__all__ = ["CentralDB", "CentralServer", "main"]
