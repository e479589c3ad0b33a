// Stream: the socket type every NBD connection runs on, whatever its transport (a unix
// stream socket or TCP): a generic stream socket, so the handshake and transmission
// code is written once.
#pragma once

#include <boost/asio/generic/stream_protocol.hpp>

namespace tapmap::nbd {

using Stream = boost::asio::generic::stream_protocol::socket;

}  // namespace tapmap::nbd
