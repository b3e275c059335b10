// A min-heap of (deadline, key) pairs for timers that must survive lots of
// re-arming: arming a key again replaces its deadline (the old heap entry is
// skipped lazily), and `pop_due` returns each due key once.
//
// Thread-safety: none; owned by one actor.
#pragma once

#include "mesh/domain/clock.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace polymesh {

class deadline_queue {
public:
  /// Sets (or replaces) the deadline of `key`.
  void arm(const std::string& key, timestamp deadline);
  /// Forgets `key`; a later `pop_due` will not return it.
  void cancel(const std::string& key);
  /// Removes and returns every key whose deadline is <= `now`, earliest first
  /// (keys due at the same instant in the order they were armed).
  [[nodiscard]] std::vector<std::string> pop_due(timestamp now);
  /// The earliest armed deadline, if any.
  [[nodiscard]] std::optional<timestamp> next() const;
  /// The number of armed keys (stale heap entries are not counted).
  [[nodiscard]] size_t size() const { return armed_.size(); }

private:
  struct entry {
    timestamp deadline;
    uint64_t generation;
    std::string key;
  };
  /// Heap order: earliest deadline on top, then the earliest armed.
  struct later {
    bool operator()(const entry& x, const entry& y) const {
      return x.deadline != y.deadline ? x.deadline > y.deadline
                                      : x.generation > y.generation;
    }
  };
  [[nodiscard]] bool live(const entry& x) const;
  /// Pops stale entries off the top. `const` because it changes only the
  /// representation, never which keys are armed or when.
  void drop_stale() const;
  /// Rebuilds the heap from live entries once stale ones dominate, so that a
  /// key re-armed forever does not grow the heap forever.
  void compact();
  /// A binary heap under `later` (std::push_heap/pop_heap); a plain vector so
  /// that `compact` can filter it in place.
  mutable std::vector<entry> heap_;
  /// key -> generation of its live heap entry.
  std::unordered_map<std::string, uint64_t> armed_;
  uint64_t next_generation_ = 0;
};

} // namespace polymesh
