#include "tapmap/proto/extent.h"

namespace tapmap {

ExtentState FromProto(proto::ExtentState state) {
  switch (state) {
    case proto::ExtentState::HOLE:
      return ExtentState::kHole;
    case proto::ExtentState::OWNED:
      return ExtentState::kOwned;
    case proto::ExtentState::SHARED:
      return ExtentState::kShared;
  }
  return ExtentState::kHole;
}

proto::ExtentState ToProto(ExtentState state) {
  switch (state) {
    case ExtentState::kHole:
      return proto::ExtentState::HOLE;
    case ExtentState::kOwned:
      return proto::ExtentState::OWNED;
    case ExtentState::kShared:
      return proto::ExtentState::SHARED;
  }
  return proto::ExtentState::HOLE;
}

Extent FromProto(proto::Extent::Reader e) {
  return Extent{e.getLogical(), e.getLength(), e.getPhysical(), e.getGeneration(),
                FromProto(e.getState())};
}

void ToProto(const Extent& extent, proto::Extent::Builder out) {
  out.setLogical(extent.logical);
  out.setLength(extent.length);
  out.setPhysical(extent.physical);
  out.setGeneration(extent.generation);
  out.setState(ToProto(extent.state));
}

std::vector<Extent> FromProto(capnp::List<proto::Extent>::Reader list) {
  std::vector<Extent> out;
  out.reserve(list.size());
  for (auto e : list) out.push_back(FromProto(e));
  return out;
}

void ToProto(const std::vector<Extent>& extents, capnp::List<proto::Extent>::Builder out) {
  for (size_t i = 0; i < extents.size(); ++i) ToProto(extents[i], out[static_cast<unsigned>(i)]);
}

std::vector<ByteRange> FromProto(capnp::List<proto::Range>::Reader list) {
  std::vector<ByteRange> out;
  out.reserve(list.size());
  for (auto r : list) out.push_back(ByteRange{r.getOffset(), r.getLength()});
  return out;
}

void ToProto(const std::vector<ByteRange>& ranges, capnp::List<proto::Range>::Builder out) {
  for (size_t i = 0; i < ranges.size(); ++i) {
    out[static_cast<unsigned>(i)].setOffset(ranges[i].offset);
    out[static_cast<unsigned>(i)].setLength(ranges[i].length);
  }
}

}  // namespace tapmap
