#include "mapserver/lease_table.h"

namespace tapmap::mapserver {

Opener* LeaseTable::Find(OpenerId id) {
  auto it = openers_.find(id);
  return it == openers_.end() ? nullptr : it->second;
}

Opener* LeaseTable::WriterOf(const std::string& volume) {
  for (auto& [id, o] : openers_) {
    if (o->volume == volume && o->writable) return o;
  }
  return nullptr;
}

uint64_t LeaseTable::WriterEpochOf(const std::string& volume) {
  Opener* writer = WriterOf(volume);
  return writer != nullptr ? writer->lease_epoch : kNoWriter;
}

std::vector<Opener*> LeaseTable::OpenersOf(const std::string& volume) {
  std::vector<Opener*> out;
  for (auto& [id, o] : openers_) {
    if (o->volume == volume) out.push_back(o);
  }
  return out;
}

}  // namespace tapmap::mapserver
