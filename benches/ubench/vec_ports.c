// Throughput of the AVX2 / AVX-512-VNNI instructions that the Q4K mat-vec
// kernel uses, alone and in pairs, and of its vector loads, in cycles (a
// chain of 1-cycle integer adds calibrates the clock). Two instructions that
// share an execution port pair run at 1.0 cycle per pair; on disjoint ports
// at 0.5. See docs/notes/2026-11-29-q4k-matvec-q4kx4-prefetch.md ("What bounds it").
//
//   gcc -O2 -mavx2 -mavx512vl -mavx512vnni benches/ubench/vec_ports.c -o /tmp/vec_ports && /tmp/vec_ports
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define N 100000000L
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double cycle_secs(void) {
    long x = 0;
    double t = now();
    for (long i = 0; i < N; i++)
        __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0" : "+r"(x));
    return (now() - t) / (4.0 * N);
}
// Eight independent chains of A (and, for pairs, eight of B) per iteration.
#define ONE(A, r) __asm__ volatile(A : "+x"(r) : "x"(c));
#define EIGHT(A, p) ONE(A, p##0) ONE(A, p##1) ONE(A, p##2) ONE(A, p##3) ONE(A, p##4) ONE(A, p##5) ONE(A, p##6) ONE(A, p##7)
#define BENCH(name, A, B)                                                                   \
    static double name(__m256i c) {                                                         \
        __m256i a0 = c, a1 = c, a2 = c, a3 = c, a4 = c, a5 = c, a6 = c, a7 = c;             \
        __m256i b0 = c, b1 = c, b2 = c, b3 = c, b4 = c, b5 = c, b6 = c, b7 = c;             \
        double t = now();                                                                   \
        for (long i = 0; i < N / 8; i++) { EIGHT(A, a) EIGHT(B, b) }                        \
        t = now() - t;                                                                      \
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(a0, a7), _mm256_add_epi32(b0, b7));   \
        s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(a1, a2), _mm256_add_epi32(a3, a4))); \
        s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(a5, a6), _mm256_add_epi32(b1, b2))); \
        s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(b3, b4), _mm256_add_epi32(b5, b6))); \
        volatile int sink = _mm256_extract_epi32(s, 0);                                     \
        (void)sink;                                                                         \
        return t / N;                                                                       \
    }
#define NOP ""
#define MADDUBS "vpmaddubsw %1, %0, %0"
#define MADDWD "vpmaddwd %1, %0, %0"
#define FMA "vfmadd231ps %1, %1, %0"
#define DPBUSD "vpdpbusd %1, %1, %0"
#define SRLV "vpsrlvd %1, %0, %0"
#define CVT "vcvtdq2ps %0, %0"
#define PSHUFB "vpshufb %1, %0, %0"
#define PERMQ "vpermq $0x4e, %0, %0"
#define PAND "vpand %1, %0, %0"
BENCH(maddubs, MADDUBS, NOP) BENCH(srlv, SRLV, NOP) BENCH(pshufb, PSHUFB, NOP) BENCH(pand, PAND, NOP)
BENCH(dpbusd, DPBUSD, NOP)
BENCH(maddubs_maddwd, MADDUBS, MADDWD) BENCH(maddubs_fma, MADDUBS, FMA) BENCH(maddubs_srlv, MADDUBS, SRLV)
BENCH(maddubs_pshufb, MADDUBS, PSHUFB) BENCH(srlv_cvt, SRLV, CVT) BENCH(pshufb_srlv, PSHUFB, SRLV)
BENCH(pshufb_permq, PSHUFB, PERMQ)

// Eight loads per iteration from an L1-resident buffer (cycles per load).
static char buf[4096] __attribute__((aligned(64)));
#define LOADS(name, insn, o)                                                                \
    static double name(__m256i c) {                                                         \
        (void)c;                                                                            \
        const char *p = buf;                                                                \
        double t = now();                                                                   \
        for (long i = 0; i < N / 8; i++)                                                    \
            __asm__ volatile(insn " " #o "+0(%0), %%ymm0\n\t" insn " " #o "+32(%0), %%ymm1\n\t" \
                             insn " " #o "+64(%0), %%ymm2\n\t" insn " " #o "+96(%0), %%ymm3\n\t" \
                             insn " " #o "+128(%0), %%ymm4\n\t" insn " " #o "+160(%0), %%ymm5\n\t" \
                             insn " " #o "+192(%0), %%ymm6\n\t" insn " " #o "+224(%0), %%ymm7" \
                             : : "r"(p) : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7"); \
        return (now() - t) / N;                                                             \
    }
LOADS(load_aligned, "vmovdqu", 0) LOADS(load_offset4, "vmovdqu", 4) LOADS(bcast128, "vbroadcasti128", 0)

int main(void) {
    __m256i c = _mm256_set1_epi32(1);
    double cyc = cycle_secs();
    printf("clock %.2f GHz; cycles per instruction (singles) or per pair (pairs)\n", 1e-9 / cyc);
    struct { const char *name; double (*f)(__m256i); } t[] = {
        {"vpmaddubsw", maddubs}, {"vpsrlvd", srlv}, {"vpshufb", pshufb}, {"vpand", pand},
        {"vpdpbusd (ymm)", dpbusd}, {"vpmaddubsw + vpmaddwd", maddubs_maddwd},
        {"vpmaddubsw + vfmadd231ps", maddubs_fma}, {"vpmaddubsw + vpsrlvd", maddubs_srlv},
        {"vpmaddubsw + vpshufb", maddubs_pshufb}, {"vpsrlvd + vcvtdq2ps", srlv_cvt},
        {"vpshufb + vpsrlvd", pshufb_srlv}, {"vpshufb + vpermq", pshufb_permq},
        {"vmovdqu ymm, aligned", load_aligned}, {"vmovdqu ymm, offset 4", load_offset4},
        {"vbroadcasti128 ymm, m128", bcast128},
    };
    for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
        printf("%-26s %.2f\n", t[i].name, t[i].f(c) / cyc);
    return 0;
}
