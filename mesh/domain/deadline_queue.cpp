#include "mesh/domain/deadline_queue.hpp"

#include <algorithm>

namespace polymesh {

namespace {

// Stale entries may outnumber live ones by this much before `compact` runs;
// the slack keeps small queues from rebuilding on every re-arm.
constexpr size_t compact_slack = 64;

} // namespace

void deadline_queue::arm(const std::string& key, timestamp deadline) {
  auto generation = next_generation_++;
  // Replacing the generation is what makes the old entry stale.
  armed_[key] = generation;
  heap_.push_back(entry{deadline, generation, key});
  std::push_heap(heap_.begin(), heap_.end(), later{});
  compact();
}

void deadline_queue::cancel(const std::string& key) {
  if (armed_.erase(key) > 0) compact();
}

std::vector<std::string> deadline_queue::pop_due(timestamp now) {
  std::vector<std::string> result;
  while (!heap_.empty() && heap_.front().deadline <= now) {
    std::pop_heap(heap_.begin(), heap_.end(), later{});
    auto x = std::move(heap_.back());
    heap_.pop_back();
    if (!live(x)) continue;
    armed_.erase(x.key);
    result.push_back(std::move(x.key));
  }
  return result;
}

std::optional<timestamp> deadline_queue::next() const {
  drop_stale();
  if (heap_.empty()) return std::nullopt;
  return heap_.front().deadline;
}

bool deadline_queue::live(const entry& x) const {
  auto it = armed_.find(x.key);
  return it != armed_.end() && it->second == x.generation;
}

void deadline_queue::drop_stale() const {
  while (!heap_.empty() && !live(heap_.front())) {
    std::pop_heap(heap_.begin(), heap_.end(), later{});
    heap_.pop_back();
  }
}

void deadline_queue::compact() {
  // Amortized O(1) per arm/cancel: a rebuild costs O(heap) and happens only
  // after at least `armed_.size() + compact_slack` stale entries piled up.
  if (heap_.size() <= 2 * armed_.size() + compact_slack) return;
  heap_.erase(std::remove_if(heap_.begin(), heap_.end(),
                             [this](const entry& x) { return !live(x); }),
              heap_.end());
  std::make_heap(heap_.begin(), heap_.end(), later{});
}

} // namespace polymesh
