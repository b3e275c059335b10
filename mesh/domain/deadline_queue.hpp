// A min-heap of (deadline, key) pairs for timers that must survive lots of
// re-arming: arming a key again replaces its deadline (the old heap entry is
// skipped lazily), and `pop_due` returns each due key once.
//
// Thread-safety: none; owned by one actor.
#pragma once

#include "mesh/domain/clock.hpp"

#include <cstdint>
#include <optional>
#include <queue>
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
  /// Removes and returns every key whose deadline is <= `now`, earliest first.
  [[nodiscard]] std::vector<std::string> pop_due(timestamp now);
  /// The earliest armed deadline, if any.
  [[nodiscard]] std::optional<timestamp> next() ;
  [[nodiscard]] size_t size() const { return armed_.size(); }

private:
  struct entry {
    timestamp deadline;
    uint64_t generation;
    std::string key;
    bool operator>(const entry& other) const { return deadline > other.deadline; }
  };
  void drop_stale();
  std::priority_queue<entry, std::vector<entry>, std::greater<entry>> heap_;
  /// key -> generation of its live heap entry.
  std::unordered_map<std::string, uint64_t> armed_;
  uint64_t next_generation_ = 0;
};

} // namespace polymesh
