print("benchmarks arrive with the backbone benchmark commit")
