"""The upstreams, one module each, behind one interface (`base.Provider`), collected in `registry.PROVIDERS`.

Tools and the catalogue ask the `registry.Registry` built from the settings; they never name a provider.
"""
