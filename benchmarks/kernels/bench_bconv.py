"""Per-layer kernel benchmark: binary convs / dense vs the popcount peak and PyTorch fp32/bf16.

    python benchmarks/kernels/bench_bconv.py --threads 1,2      (same as `onebit bench --layers`)
"""

from onebit.analysis.kernel_bench import main

if __name__ == "__main__":
    main()
