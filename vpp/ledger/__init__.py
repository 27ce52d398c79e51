"""The revenue ledger: settled amounts per unit × interval × stream, customer contracts, monthly reports.

- ``money``: integer minor units, exact rates, largest-remainder splits;
- ``contracts``: the three C&I business models and ``split_revenue`` (pure functions);
- ``config``: the ``contracts:`` block of the main config;
- ``store``: the ``settlements``, ``metered_energy`` and ``statements`` tables and their idempotent writers;
- ``report``: a month's totals by contract, unit or stream, summed by the database.

See docs/ledger.md.
"""
