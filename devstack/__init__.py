"""The development stack: `make demo` (devstack.demo) and `make up` / `make down` (devstack.localstack).

Runs the platform on one machine against the simulated agency systems (sandbox/): it may import the sandbox,
the core (lienthong) and the connectors; nothing in the platform imports it.
"""
