#include "report_batcher.hpp"

namespace polymesh::sdk {

using nlohmann::json;

namespace {

/// The single-run call's reply that a report's item `a` stands for; false
/// when `a` is not an answer for `run`.
bool item_reply(const json& a, const std::string& run, http_reply& out) {
  if (!a.is_object()) return false;
  auto id = a.find("run");
  auto ok = a.find("ok");
  if (id == a.end() || *id != run || ok == a.end() || !ok->is_boolean()) return false;
  if (ok->get<bool>()) {
    out = http_reply{200, a, ""};
    return true;
  }
  auto status = a.find("http_status");
  if (status == a.end() || !status->is_number_integer()) return false;
  out = http_reply{};
  out.status = status->get<int>();
  auto err = a.find("error");
  out.body = json{{"error", err != a.end() ? *err : json::object()}};
  if (err != a.end() && err->is_object()) out.error = err->value("message", "");
  if (out.error.empty()) out.error = "refused in a report";
  return true;
}

} // namespace

report_batcher::report_batcher(report_call report, start_call start, finish_call finish,
                               size_t max_items, size_t max_bytes)
    : report_(std::move(report))
    , start_(std::move(start))
    , finish_(std::move(finish))
    , max_items_(std::max<size_t>(1, std::min(max_items, wire::max_report_items)))
    , max_bytes_(max_bytes) {}

http_reply report_batcher::start(const std::string& run) {
  item it;
  it.run = run;
  return submit(it);
}

http_reply report_batcher::finish(const std::string& run,
                                  const wire::finish_request& req) {
  item it;
  it.is_start = false;
  it.run = run;
  it.finish = &req;
  return submit(it);
}

uint64_t report_batcher::reports() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return reports_;
}

size_t report_batcher::waiting() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return waiting_.size();
}

http_reply report_batcher::submit(item& it) {
  std::unique_lock<std::mutex> guard{mtx_};
  waiting_.push_back(&it);
  for (;;) {
    cv_.wait(guard, [&] { return it.done || !sending_; });
    if (it.done) return std::move(it.answer);
    // Nobody is sending: this caller sends for everyone waiting, oldest
    // first, itself included unless the report is full.
    sending_ = true;
    std::vector<item*> batch;
    size_t bytes = 0;
    while (!waiting_.empty() && batch.size() < max_items_) {
      auto* next = waiting_.front();
      auto size =
          next->finish ? next->finish->result.size() + next->finish->error.size() : 0;
      if (!batch.empty() && bytes + size > max_bytes_) break;
      bytes += size;
      batch.push_back(next);
      waiting_.pop_front();
    }
    guard.unlock();
    send(batch);
    guard.lock();
    for (auto* b : batch)
      b->done = true;
    sending_ = false;
    cv_.notify_all();
  }
}

void report_batcher::send(const std::vector<item*>& batch) {
  if (batch.size() == 1) {
    batch.front()->answer = send_alone(*batch.front());
    return;
  }
  wire::report_request req;
  std::vector<item*> starts;
  std::vector<item*> finishes;
  for (auto* b : batch) {
    if (b->is_start) {
      req.started.push_back(b->run);
      starts.push_back(b);
    } else {
      req.finished.emplace_back(b->run, *b->finish);
      finishes.push_back(b);
    }
  }
  auto r = report_(req);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    ++reports_;
  }
  if (r.transient()) {
    for (auto* b : batch)
      b->answer = r;
    return;
  }
  auto fill = [&r](const char* key, const std::vector<item*>& items) {
    if (items.empty()) return true;
    if (!r.body.is_object()) return false;
    auto list = r.body.find(key);
    if (list == r.body.end() || !list->is_array() || list->size() != items.size())
      return false;
    for (size_t i = 0; i < items.size(); ++i)
      if (!item_reply((*list)[i], items[i]->run, items[i]->answer)) return false;
    return true;
  };
  if (r.ok() && fill("started", starts) && fill("finished", finishes)) return;
  // Refused as a whole, or an answer that does not match: each on its own.
  for (auto* b : batch)
    b->answer = send_alone(*b);
}

http_reply report_batcher::send_alone(const item& it) {
  return it.is_start ? start_(it.run) : finish_(it.run, *it.finish);
}

} // namespace polymesh::sdk
