// Kubernetes label selectors: parsing and matching.
//
// Grammar (as `k8s.io/apimachinery/pkg/labels.Parse`): requirements separated
// by ',' (AND); each is `key`, `!key`, `key=value`, `key==value`,
// `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key>N`, `key<N`
// (N an integer). Whitespace around tokens is ignored. An empty or all-blank
// selector matches everything. `!=` and `notin` also match when the key is
// absent; `>`/`<` require the key with an integer value.
//
// Thread-safety: a parsed `selector` is an immutable value, safe to share.
#pragma once

#include "mesh/domain/records.hpp"

#include <caf/expected.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace polymesh {

struct requirement {
  enum class op : uint8_t {
    equals,
    not_equals,
    in,
    not_in,
    exists,
    does_not_exist,
    greater_than,
    less_than
  };
  std::string key;
  op oper = op::exists;
  /// Sorted, deduplicated; one value for equals/not_equals/gt/lt.
  std::vector<std::string> values;

  [[nodiscard]] bool matches(const label_map& labels) const;
  /// Kubernetes' canonical text of this requirement, e.g. `env in (a,b)`.
  [[nodiscard]] std::string to_string() const;
};

class selector {
public:
  /// The empty selector; matches everything.
  selector() = default;

  /// Parses `text`. On failure returns an `errc::invalid_selector` error
  /// whose message says what was expected, with `position_of` the 0-based
  /// offset of the offending character and `field_of` == `field`.
  [[nodiscard]] static caf::expected<selector>
  parse(const std::string& text, const std::string& field = "selector");

  [[nodiscard]] bool matches(const label_map& labels) const;
  [[nodiscard]] bool empty() const { return reqs_.empty(); }
  [[nodiscard]] const std::vector<requirement>& requirements() const { return reqs_; }
  /// Canonical text (requirements sorted by key, Kubernetes' format).
  [[nodiscard]] std::string to_string() const;
  /// The first requirement `labels` fails, or nullptr when all hold.
  [[nodiscard]] const requirement* first_unmet(const label_map& labels) const;
  /// Why no set of labels can meet this selector and `also` together (a
  /// token's scope), e.g. `label 'env' cannot meet all of env=dev, env=prod`;
  /// "" when some can.
  [[nodiscard]] std::string contradiction(const selector& also = {}) const;

private:
  std::vector<requirement> reqs_;
};

} // namespace polymesh
