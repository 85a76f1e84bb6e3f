from hypothesis import settings

# No test may fail for being slow on a busy machine: speed is for benchmarks.
settings.register_profile("twisted-zero", deadline=None)
settings.load_profile("twisted-zero")
