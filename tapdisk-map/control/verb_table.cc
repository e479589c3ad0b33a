// The verb table's lookup: the families of verb_table.h put together in PROTOCOL.md's
// order, searched by name for each request (a dozen entries: a linear scan).
#include "tapdisk-map/control/verb_table.h"

namespace tapmap::control {

namespace {

// The verb families, in PROTOCOL.md's order.
constexpr std::span<const Verb> (*kFamilies[])() = {DaemonVerbs, VbdVerbs, NbdVerbs, VolumeVerbs};

}  // namespace

std::vector<const Verb*> AllVerbs() {
  std::vector<const Verb*> verbs;
  for (auto family : kFamilies) {
    for (const Verb& verb : family()) verbs.push_back(&verb);
  }
  return verbs;
}

const Verb* FindVerb(std::string_view name) {
  for (auto family : kFamilies) {
    for (const Verb& verb : family()) {
      if (verb.name == name) return &verb;
    }
  }
  return nullptr;
}

}  // namespace tapmap::control
