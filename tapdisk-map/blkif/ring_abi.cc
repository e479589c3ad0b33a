#include "tapdisk-map/blkif/ring_abi.h"

#include <string>

namespace tapmap::blkif {

Result<Abi> AbiFromProtocol(std::optional<std::string_view> protocol) {
  if (!protocol.has_value()) return Abi::kNative;
  if (*protocol == XEN_IO_PROTO_ABI_X86_32) return Abi::kX86_32;
  if (*protocol == XEN_IO_PROTO_ABI_X86_64) return Abi::kX86_64;
  return Status::NotSupported("unknown ring protocol '" + std::string(protocol->substr(0, 32)) + "'");
}

const char* AbiName(Abi abi) {
  switch (abi) {
    case Abi::kNative: return "native";
    case Abi::kX86_32: return "x86_32-abi";
    case Abi::kX86_64: return "x86_64-abi";
  }
  return "?";
}

}  // namespace tapmap::blkif
