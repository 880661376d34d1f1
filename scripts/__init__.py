"""Scripts run from the root of a clone as modules (`python -m scripts.<kind>.<name>`); not installed with the
package. data/: the bundled demo data generators; bench/: benchmarks; compare/: side-by-side comparisons;
gpu/: the GPU check (through scripts/gpu_check.sh); slurm/: a local SLURM cluster for the tests."""
