// Loading YAML that a person wrote (a config file, a params file) without
// the traps of Debian's yaml-cpp 0.7:
//   - `YAML::LoadAll` never returns on a document that starts with `,`: it
//     adds empty documents for good until memory runs out
//     (jbeder/yaml-cpp#1040). `load_all_documents` parses once without
//     building nodes and stops where the parser stops moving.
//   - An alias inside its own anchor (`a: &x [*x]`) makes a cycle, and
//     aliases of aliases ("billion laughs") expand a few hundred bytes into
//     millions of nodes: `yaml_budget` bounds a walk's depth and size.
//
// Thread-safety: free functions and a value type; no shared state.
#pragma once

#include <cstddef>
#include <sstream>
#include <string>
#include <vector>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace polymesh {

namespace yaml_guard_detail {

/// Records where each document starts; builds nothing.
struct document_starts final : YAML::EventHandler {
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

} // namespace yaml_guard_detail

/// `YAML::LoadAll(text)`, but a document the parser cannot get past throws
/// `YAML::ParserException` at its position instead of looping for good.
[[nodiscard]] inline std::vector<YAML::Node> load_all_documents(const std::string& text) {
  std::istringstream in{text};
  YAML::Parser parser{in};
  yaml_guard_detail::document_starts seen;
  while (parser.HandleNextDocument(seen)) {
    auto n = seen.starts.size();
    if (n >= 2 && seen.starts[n - 1].pos == seen.starts[n - 2].pos)
      throw YAML::ParserException(
          seen.starts[n - 1], "unexpected '" + text.substr(seen.starts[n - 1].pos, 1) +
                                  "' where a document starts");
  }
  return YAML::LoadAll(text);
}

/// Bounds a recursive walk over YAML nodes: `enter` throws
/// `YAML::ParserException` once the walk is deeper than `max_depth` (an
/// alias inside its own anchor never ends) or has visited more than
/// `max_nodes` nodes (aliases of aliases). Call `enter` on each node and
/// `leave` when done with it.
class yaml_budget {
public:
  static constexpr int max_depth = 64;
  static constexpr size_t max_nodes = 100000;

  void enter(const YAML::Node& node) {
    if (++depth_ > max_depth)
      throw YAML::ParserException(node.Mark(),
                                  "nested deeper than " + std::to_string(max_depth) +
                                      " levels (an alias inside its own anchor?)");
    if (++nodes_ > max_nodes)
      throw YAML::ParserException(node.Mark(),
                                  "more than " + std::to_string(max_nodes) +
                                      " values once its aliases are expanded");
  }
  void leave() { --depth_; }

private:
  int depth_ = 0;
  size_t nodes_ = 0;
};

} // namespace polymesh
