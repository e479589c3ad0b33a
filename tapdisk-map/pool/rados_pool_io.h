// RadosPoolIo: the PoolIo of a pool stored in RADOS objects (protocol/pool_format.h:
// address `addr` is byte addr % object_bytes of object RadosDataObject(prefix,
// addr / object_bytes)). Uses librados's asynchronous operations: each completion
// callback (on a librados thread) posts the caller's `done` to the io_context — no
// thread per request.
//
// Honours the PoolIo contract (pool_io.h), with these specifics:
//  - An operation spanning object boundaries is split into one RADOS operation per
//    object and completes when all parts have; its status is the first error.
//    WriteV is one RADOS write per object touched.
//  - Reads of absent objects, or past an object's end, return zeros (sparse pool).
//  - Write data is copied into librados's buffers when the operation starts; read
//    data is copied into the caller's buffer before `done` is posted.
//  - Sync completes once every write started before it has completed: RADOS
//    acknowledges a write only when it is durable on every OSD of the acting set, so
//    that is the fdatasync of this backend. Writes started after the Sync do not
//    delay it.
//  - Errors: a stopped or unreachable cluster fails operations with kUnavailable after
//    the RadosCluster's timeout; an access past `end_bytes` fails with kIoError.
//  - librados throttles operations in flight (objecter_inflight_ops, 1024 by default):
//    past that, starting an operation blocks the calling thread until one completes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "common/status.h"
#include "rados/rados_cluster.h"
#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::pool {

struct RadosPoolLayout {
  std::string prefix;         // the pool location's object prefix
  uint64_t object_bytes = 0;  // from the superblock: a power of two >= kDirectIoAlignment
  uint64_t end_bytes = 0;     // size of the address space (the superblock's pool_bytes)
};

// Creates a RadosPoolIo on `cluster` (whose ownership it takes) completing on `io`,
// which must outlive it. kInvalidArgument for a bad layout.
Result<std::unique_ptr<PoolIo>> CreateRadosPoolIo(boost::asio::io_context& io,
                                                  std::unique_ptr<rados::RadosCluster> cluster,
                                                  RadosPoolLayout layout);

}  // namespace tapmap::pool
