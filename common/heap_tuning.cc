#include "common/heap_tuning.h"

#include <malloc.h>

namespace tapmap {

void KeepLargeBuffersInHeap() {
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum on 64-bit
  ::mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace tapmap
