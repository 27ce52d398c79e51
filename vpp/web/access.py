"""Who may see what: an operator sees every contract; a customer only the contracts that name it.

Every page, download and JSON route that shows contract or site data asks ``visible_contracts`` and
answers 404 for anything else (the same answer as for a contract that does not exist, so a customer
cannot even learn which ids exist).
"""

from __future__ import annotations

from collections.abc import Sequence

from vpp.ledger.contracts import CoInvestment, Contract
from vpp.web.auth import OPERATOR, Session


def parties(contract: Contract) -> tuple[str, ...]:
    """The customers a contract names: its ``customer``, or the parties of its stakes (the platform excluded)."""
    if isinstance(contract, CoInvestment):
        return tuple(p for p, _ in contract.stakes if p != "platform")
    return (contract.customer,)


def customers_of(contracts: Sequence[Contract]) -> set[str]:
    return {p for c in contracts for p in parties(c)}


def visible_contracts(session: Session, contracts: Sequence[Contract]) -> list[Contract]:
    if session.role == OPERATOR:
        return list(contracts)
    return [c for c in contracts if session.customer in parties(c)]


def contract_for(session: Session, contracts: Sequence[Contract], contract_id: str) -> Contract | None:
    """The contract if this session may see it, else None (the caller answers 404)."""
    return next((c for c in visible_contracts(session, contracts) if c.id == contract_id), None)
