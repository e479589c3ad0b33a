// Heap tuning for processes on the data path (tapdisk-map and the benches that
// measure its engine).
#pragma once

namespace tapmap {

// Makes glibc serve allocations up to 32 MiB from the heap instead of a fresh mmap
// each, and return freed heap memory to the kernel only beyond 256 MiB. The data path
// allocates and frees many 64 KiB-32 MiB buffers (NBD payloads, cache blocks); with
// glibc's defaults each costs an mmap, a page fault and kernel zeroing per 4 KiB page,
// and an munmap — measured as most of the gap in sequential NBD writes
// (bench/nbd/seq_write.sh: 0.32-0.41x -> 0.55-0.75x of raw with this call).
//
// A process-wide setting: call it once at the start of main, before any thread starts.
void KeepLargeBuffersInHeap();

}  // namespace tapmap
