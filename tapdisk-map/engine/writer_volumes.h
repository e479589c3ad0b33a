// WriterVolumes: the read-write Volume objects alive on this host, by volume name, and
// the opens waiting for them to end.
//
// A read-write Volume counts from its creation until it is destroyed, which is after
// its final commit and its close at the mapserver (a Volume keeps itself alive until
// both are done). The engine opens a name at the server only when no read-write
// Volume of it is alive here, except the one it shares (see Engine::Open): a volume
// whose front ends are gone but whose close is still in flight would otherwise make
// the server refuse the new read-write opener (busy), and a new read-only opener could
// read maps from before the final commit.
//
//   writers.Add("vm1");                          // a rw Volume of vm1 is created
//   writers.WaitForEnd("vm1", [] { ...open... });  // true: parked until Remove
//   writers.Remove("vm1");                       // it was destroyed: runs the waiters
//
// Threading: every method is thread-safe and may be called under any lock of the
// caller: they take only this object's mutex and call nothing under it. Waiters run
// on the thread calling Remove, outside the mutex, so they must only hand work off
// (post it), never block or take the caller's locks.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace tapmap::engine {

class WriterVolumes {
 public:
  WriterVolumes() = default;
  WriterVolumes(const WriterVolumes&) = delete;
  WriterVolumes& operator=(const WriterVolumes&) = delete;

  // One more read-write Volume named `name` is alive.
  void Add(const std::string& name);

  // One read-write Volume named `name` was destroyed (each Add is matched by one
  // Remove). When none of that name is left, the waiters parked for it run, in order.
  void Remove(const std::string& name);

  // If a read-write Volume named `name` is alive, keeps `resume` to run when none is
  // and returns true; otherwise returns false and drops `resume`.
  bool WaitForEnd(const std::string& name, std::function<void()> resume);

  // True while a read-write Volume named `name` is alive.
  bool Alive(const std::string& name) const;

  // Drops every parked waiter uncalled and parks no more (the engine is going away);
  // Add and Remove stay safe to call.
  void Abandon();

 private:
  struct Name {
    size_t alive = 0;
    std::vector<std::function<void()>> waiters;
  };
  mutable std::mutex mu_;
  std::map<std::string, Name> names_;  // only names with a live rw Volume
  bool abandoned_ = false;
};

}  // namespace tapmap::engine
