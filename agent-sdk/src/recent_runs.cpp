#include "recent_runs.hpp"

#include <iterator>

namespace polymesh::sdk {

recent_runs::recent_runs(size_t max_runs, size_t max_bytes)
    : max_runs_(max_runs)
    , max_bytes_(max_bytes) {}

size_t recent_runs::cost(const std::string& id, const memory& m) {
  return id.size() + m.finish.result.size() + m.finish.error.size() +
         m.finish.reason.size() + m.offer.size();
}

void recent_runs::remember(const std::string& id, memory m) {
  if (auto it = index_.find(id); it != index_.end()) erase(it->second);
  size_t bytes = 0;
  if (m.what == outcome::finished) bytes = cost(id, m);
  if (m.what != outcome::finished || bytes > max_bytes_) {
    if (m.what == outcome::finished) m.what = outcome::ran;
    m.finish = {};
    bytes = 0;
  }
  entries_.push_back(entry{id, std::move(m), bytes, {}});
  auto it = std::prev(entries_.end());
  index_.emplace(id, it);
  if (it->m.what == outcome::finished) {
    it->in_finishes = finishes_.insert(finishes_.end(), &*it);
    bytes_ += bytes;
  }
  while (entries_.size() > max_runs_)
    erase(entries_.begin());
  while (bytes_ > max_bytes_)
    forget_oldest_finish();
}

std::optional<recent_runs::memory> recent_runs::recall(const std::string& id) const {
  auto it = index_.find(id);
  if (it == index_.end()) return std::nullopt;
  return it->second->m;
}

void recent_runs::erase(std::list<entry>::iterator it) {
  if (it->m.what == outcome::finished) {
    finishes_.erase(it->in_finishes);
    bytes_ -= it->bytes;
  }
  index_.erase(it->id);
  entries_.erase(it);
}

void recent_runs::forget_oldest_finish() {
  auto* e = finishes_.front();
  finishes_.pop_front();
  bytes_ -= e->bytes;
  e->bytes = 0;
  e->m.what = outcome::ran;
  e->m.finish = {};
}

} // namespace polymesh::sdk
