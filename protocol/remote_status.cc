#include "protocol/remote_status.h"

#include <kj/string.h>

namespace tapmap::protocol {

Status StatusFromException(const kj::Exception& e) {
  bool connection_problem = e.getType() == kj::Exception::Type::DISCONNECTED ||
                            e.getType() == kj::Exception::Type::OVERLOADED;
  auto description = e.getDescription();
  return Status::FromWireText(std::string_view(description.begin(), description.size()),
                              connection_problem);
}

kj::Exception ToException(const Status& status) {
  auto type = status.code() == StatusCode::kUnavailable ? kj::Exception::Type::DISCONNECTED
                                                        : kj::Exception::Type::FAILED;
  return kj::Exception(type, __FILE__, __LINE__, kj::heapString(status.ToWireText()));
}

}  // namespace tapmap::protocol
