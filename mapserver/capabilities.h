// The capabilities of the mapping protocol (include/tapmap/proto/mapping.capnp) as the
// mapserver serves them: a Gate per connection; through it, after a login, a Session;
// through that, a Volume per open. They hold no state of their own beyond their
// connection's and act through MappingService's public interface.
#pragma once

#include <kj/async.h>

#include <memory>
#include <string>

#include "mapserver/mapping_service.h"
#include "tapmap/proto/mapping.capnp.h"

namespace tapmap::mapserver {

// The bootstrap capability of a new connection (see MappingService::NewGate).
proto::Gate::Client NewGateCapability(MappingService& service, std::string peer,
                                      kj::Own<kj::PromiseFulfiller<void>> close_connection,
                                      std::shared_ptr<ConnectionState> state);

}  // namespace tapmap::mapserver
