"""Economics of independent storage: capacity pricing with a transfer factor λ and project finance.

Python API (the CLI ``vpp economics transfer-factor`` is a thin wrapper)::

    from vpp.economics.case import load_case, read_simulation_summary
    from vpp.economics.plot import plot_sensitivity
    from vpp.economics.transfer import analyse_transfer_factor

    case = load_case("config/examples/economics_100mw_200mwh.yaml")
    result = analyse_transfer_factor(case)                 # C_market from the case's cycle formula
    summary = read_simulation_summary("out/sim", case.currency)
    result = analyse_transfer_factor(case, summary)        # C_market from a `vpp simulate` run

Modules: ``finance`` (annuity, NPV, IRR), ``case`` (the case file and the
simulation summary), ``market`` (C_market), ``transfer`` (ceilings, the λ
interval, the sensitivity), ``plot``. This package imports none of them, so
that the ``vpp`` command starts without scipy and matplotlib. The method is in
``docs/economics.md``.
"""
