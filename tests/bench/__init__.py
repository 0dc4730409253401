"""The benchmark's tests."""

# Options that leave the city-scale sections out of a bench run (tests/bench/test_scale.py
# runs them small).
NO_SCALE = (
    "--scale-devices", "0", "--influx-devices", "0", "--storm-lights", "0",
    "--offline-devices", "0",
)  # fmt: skip
