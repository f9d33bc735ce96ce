"""What tests and benchmarks share: strict fakes of every outside system, the process harness, factories."""
