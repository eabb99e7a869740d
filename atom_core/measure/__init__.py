"""Running requests and measuring them: FanOut (N streams at once), the load engine (K in
flight) and sweeps."""
