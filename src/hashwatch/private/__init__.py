"""Private matching with threshold vouchers (after Apple's PSI system, 2021).

Modules: ``sodium`` (crypto primitives), ``field`` (GF(p) arithmetic, Shamir, detection),
``keys`` (PDQ -> exact match keys), ``table`` (server set-up and signed commitment),
``client`` (voucher generation), ``server`` (intake, threshold detection, recovery, report),
``demo`` (end-to-end demonstration). See docs/private-matching.md.
"""
