#include "mesh/domain/selector.hpp"

#include "mesh/domain/error.hpp"
#include "mesh/domain/labels.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <string_view>

namespace polymesh {

namespace {

// -- integers -----------------------------------------------------------------

// Go's `strconv.ParseInt(s, 10, 64)`, which Kubernetes uses for both sides of
// `>`/`<`: an optional sign, then one or more decimal digits, in range.
std::optional<int64_t> parse_int64(std::string_view text) {
  if (!text.empty() && text.front() == '+') {
    text.remove_prefix(1);
    if (!text.empty() && text.front() == '-') return std::nullopt;
  }
  int64_t result = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), result);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return result;
}

bool contains(const std::vector<std::string>& values, const std::string& x) {
  return std::find(values.begin(), values.end(), x) != values.end();
}

// -- lexer --------------------------------------------------------------------

// Kubernetes' lexer knows the keywords `in` and `notin`, but the parser reads
// them as plain identifiers everywhere except in operator position. We lex
// them as identifiers and let the parser decide, which is equivalent.
enum class token_kind : uint8_t {
  end,
  identifier,
  comma,
  open_paren,
  close_paren,
  bang,
  equals,
  double_equals,
  not_equals,
  greater,
  less,
};

struct token {
  token_kind kind = token_kind::end;
  std::string text;
  /// Offset of the token's first character; the input's size for `end`.
  size_t pos = 0;
};

// Kubernetes' `isWhitespace`; other control characters (e.g. '\v') belong to
// identifiers and then fail label validation.
bool is_whitespace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool is_special(char c) {
  switch (c) {
  case '=':
  case '!':
  case '(':
  case ')':
  case ',':
  case '>':
  case '<': return true;
  default: return false;
  }
}

// Splits `text` into tokens, always ending with one `end` token. Cannot fail:
// any run of non-special, non-blank characters is an identifier. Unlike
// Kubernetes' lexer, a NUL byte is an ordinary character, not an end of input,
// so `x\0junk` is rejected instead of silently read as `x`.
std::vector<token> lex(const std::string& text) {
  std::vector<token> result;
  size_t i = 0;
  const size_t n = text.size();
  for (;;) {
    while (i < n && is_whitespace(text[i]))
      ++i;
    if (i == n) {
      result.push_back({token_kind::end, {}, n});
      return result;
    }
    const size_t start = i;
    const char c = text[i];
    if (!is_special(c)) {
      while (i < n && !is_special(text[i]) && !is_whitespace(text[i]))
        ++i;
      result.push_back({token_kind::identifier, text.substr(start, i - start), start});
      continue;
    }
    // The longest operator wins; `!=` and `==` are the only two-character ones.
    const bool then_equals = i + 1 < n && text[i + 1] == '=';
    token_kind kind = token_kind::end;
    size_t length = 1;
    switch (c) {
    case '=':
      kind = then_equals ? token_kind::double_equals : token_kind::equals;
      length = then_equals ? 2 : 1;
      break;
    case '!':
      kind = then_equals ? token_kind::not_equals : token_kind::bang;
      length = then_equals ? 2 : 1;
      break;
    case '(': kind = token_kind::open_paren; break;
    case ')': kind = token_kind::close_paren; break;
    case ',': kind = token_kind::comma; break;
    case '>': kind = token_kind::greater; break;
    case '<': kind = token_kind::less; break;
    }
    i += length;
    result.push_back({kind, text.substr(start, length), start});
  }
}

// -- parser -------------------------------------------------------------------

// A recursive-descent parser over the token list, following the structure of
// Kubernetes' `Parser` so that the accepted language is the same. Every error
// points at the first character of the token that broke the grammar.
class parser {
public:
  parser(const std::string& text, std::string field)
      : tokens_(lex(text))
      , field_(std::move(field)) {}

  caf::expected<std::vector<requirement>> run() {
    std::vector<requirement> result;
    for (;;) {
      const auto& first = peek();
      if (first.kind == token_kind::end) return result;
      if (first.kind != token_kind::identifier && first.kind != token_kind::bang)
        return fail(first, "expected a label key or '!'");
      auto req = parse_requirement();
      if (!req) return std::move(req.error());
      result.push_back(std::move(*req));
      const auto& sep = next();
      if (sep.kind == token_kind::end) return result;
      if (sep.kind != token_kind::comma)
        return fail(sep, "expected ',' or end of selector after '" +
                             result.back().to_string() + "'");
      // A trailing or doubled ',' is an error, as in Kubernetes.
      const auto& after = peek();
      if (after.kind != token_kind::identifier && after.kind != token_kind::bang)
        return fail(after, "expected a label key or '!' after ','");
    }
  }

private:
  const token& peek() const { return tokens_[index_]; }

  // Never moves past the final `end` token.
  const token& next() {
    const auto& tok = tokens_[index_];
    if (tok.kind != token_kind::end) ++index_;
    return tok;
  }

  caf::error fail(const token& at, std::string message) const {
    return make_error(errc::invalid_selector, std::move(message), field_,
                      static_cast<int64_t>(at.pos));
  }

  // Applies the label rules to a value the selector compares with, so that a
  // selector can never demand a value no label can carry.
  caf::error check_value(const token& at, const std::string& value) const {
    if (auto err = validate_label_value(value, field_)) return fail(at, message_of(err));
    return {};
  }

  caf::expected<requirement> parse_requirement() {
    requirement req;
    const auto* key = &next();
    const bool negated = key->kind == token_kind::bang;
    if (negated) key = &next();
    if (key->kind != token_kind::identifier)
      return fail(*key, "expected a label key after '!'");
    if (auto err = validate_label_key(key->text, field_))
      return fail(*key, message_of(err));
    req.key = key->text;
    const auto& after = peek();
    if (after.kind == token_kind::end || after.kind == token_kind::comma) {
      req.oper = negated ? requirement::op::does_not_exist : requirement::op::exists;
      return req;
    }
    if (negated)
      return fail(after, "expected ',' or end of selector after '!" + req.key + "'");
    const auto& op = next();
    switch (op.kind) {
    // `==` is a spelling of `=`; both match alike and print as `=`.
    case token_kind::equals:
    case token_kind::double_equals: req.oper = requirement::op::equals; break;
    case token_kind::not_equals: req.oper = requirement::op::not_equals; break;
    case token_kind::greater: req.oper = requirement::op::greater_than; break;
    case token_kind::less: req.oper = requirement::op::less_than; break;
    case token_kind::identifier:
      if (op.text == "in") {
        req.oper = requirement::op::in;
        break;
      }
      if (op.text == "notin") {
        req.oper = requirement::op::not_in;
        break;
      }
      [[fallthrough]];
    default: return fail(op, "expected an operator after key '" + req.key + "'");
    }
    auto err = req.oper == requirement::op::in || req.oper == requirement::op::not_in
                   ? parse_value_list(op, req.values)
                   : parse_single_value(op, req.oper, req.values);
    if (err) return err;
    std::sort(req.values.begin(), req.values.end());
    req.values.erase(std::unique(req.values.begin(), req.values.end()), req.values.end());
    return req;
  }

  // `=`, `==`, `!=`, `>` or `<` followed by one value. As in Kubernetes, a
  // missing value (`x=`, `x=,y`) is the empty string.
  caf::error parse_single_value(const token& op, requirement::op oper,
                                std::vector<std::string>& values) {
    const auto& at = peek();
    std::string value;
    if (at.kind != token_kind::end && at.kind != token_kind::comma) {
      if (at.kind != token_kind::identifier)
        return fail(at, "expected a value after '" + op.text + "'");
      value = next().text;
    }
    if (oper == requirement::op::greater_than || oper == requirement::op::less_than)
      if (auto err = check_integer(at, op, value)) return err;
    if (auto err = check_value(at, value)) return err;
    values.push_back(std::move(value));
    return {};
  }

  // Kubernetes demands an int64 and a valid label value, which together mean
  // unsigned decimal digits that fit into an int64.
  caf::error check_integer(const token& at, const token& op,
                           const std::string& value) const {
    const auto prefix = "value of '" + op.text + "' must be ";
    auto parsed = parse_int64(value);
    if (!parsed) {
      const bool digits =
          !value.empty() && std::all_of(value.begin(), value.end(),
                                        [](char c) { return c >= '0' && c <= '9'; });
      return fail(at,
                  prefix + (digits ? "an integer in the 64-bit range" : "an integer"));
    }
    if (value.front() == '+' || value.front() == '-')
      return fail(at, prefix + "an integer without a sign, as label values start with a "
                               "digit or letter");
    return {};
  }

  // `(v1,v2,...)` after `in`/`notin`. Items may be empty: `()`, `(,a)` and
  // `(a,,b)` all contain the empty string, exactly as in Kubernetes.
  caf::error parse_value_list(const token& op, std::vector<std::string>& values) {
    const auto& open = next();
    if (open.kind != token_kind::open_paren)
      return fail(open, "expected '(' after '" + op.text + "'");
    bool expect_item = true;
    for (;;) {
      const auto& tok = next();
      switch (tok.kind) {
      case token_kind::close_paren:
        if (expect_item) values.emplace_back();
        return {};
      case token_kind::comma:
        if (expect_item) values.emplace_back();
        expect_item = true;
        break;
      case token_kind::identifier:
        if (!expect_item)
          return fail(tok, "expected ',' or ')' after value '" + values.back() + "'");
        if (auto err = check_value(tok, tok.text)) return err;
        values.push_back(tok.text);
        expect_item = false;
        break;
      case token_kind::end: return fail(tok, "unterminated value list, expected ')'");
      default:
        return fail(tok, expect_item
                             ? "expected a value, ',' or ')'"
                             : "expected ',' or ')' after value '" + values.back() + "'");
      }
    }
  }

  std::vector<token> tokens_;
  size_t index_ = 0;
  std::string field_;
};

std::string join_sorted(std::vector<std::string> values,
                        std::string_view separator = ",") {
  // Hand-built requirements may hold unsorted values; the text is canonical
  // anyway (Kubernetes' `safeSort`).
  std::sort(values.begin(), values.end());
  std::string result;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) result += separator;
    result += values[i];
  }
  return result;
}

} // namespace

bool requirement::matches(const label_map& labels) const {
  auto it = labels.find(key);
  const bool has = it != labels.end();
  switch (oper) {
  case op::equals:
  case op::in: return has && contains(values, it->second);
  case op::not_equals:
  case op::not_in: return !has || !contains(values, it->second);
  case op::exists: return has;
  case op::does_not_exist: return !has;
  case op::greater_than:
  case op::less_than: {
    // A label that is not an integer never satisfies a numeric comparison.
    if (!has || values.size() != 1) return false;
    auto actual = parse_int64(it->second);
    auto bound = parse_int64(values.front());
    if (!actual || !bound) return false;
    return oper == op::greater_than ? *actual > *bound : *actual < *bound;
  }
  }
  return false;
}

std::string requirement::to_string() const {
  switch (oper) {
  case op::exists: return key;
  case op::does_not_exist: return "!" + key;
  case op::equals: return key + "=" + join_sorted(values);
  case op::not_equals: return key + "!=" + join_sorted(values);
  case op::greater_than: return key + ">" + join_sorted(values);
  case op::less_than: return key + "<" + join_sorted(values);
  case op::in: return key + " in (" + join_sorted(values) + ")";
  case op::not_in: return key + " notin (" + join_sorted(values) + ")";
  }
  return key;
}

caf::expected<selector> selector::parse(const std::string& text,
                                        const std::string& field) {
  auto reqs = parser{text, field}.run();
  if (!reqs) return std::move(reqs.error());
  // Stable, so repeated keys keep their written order; for the selector sizes
  // seen in practice this is also the order Kubernetes' sort produces.
  std::stable_sort(
      reqs->begin(), reqs->end(),
      [](const requirement& x, const requirement& y) { return x.key < y.key; });
  selector result;
  result.reqs_ = std::move(*reqs);
  return result;
}

bool selector::matches(const label_map& labels) const {
  return first_unmet(labels) == nullptr;
}

std::string selector::to_string() const {
  std::string result;
  for (size_t i = 0; i < reqs_.size(); ++i) {
    if (i > 0) result += ',';
    result += reqs_[i].to_string();
  }
  return result;
}

const requirement* selector::first_unmet(const label_map& labels) const {
  for (const auto& req : reqs_)
    if (!req.matches(labels)) return &req;
  return nullptr;
}

namespace {

/// Whether some value of one key (or its absence) meets every one of `reqs`.
bool satisfiable(const std::vector<const requirement*>& reqs) {
  using op = requirement::op;
  bool present = false;
  bool absent = false;
  std::optional<std::vector<std::string>> allowed; // from `=` and `in`
  std::vector<std::string> excluded;               // from `!=` and `notin`
  std::optional<int64_t> above;                    // value > above
  std::optional<int64_t> below;                    // value < below
  for (const auto* r : reqs) {
    switch (r->oper) {
    case op::equals:
    case op::in: {
      present = true;
      if (!allowed) {
        allowed = r->values;
        break;
      }
      std::vector<std::string> both;
      for (const auto& v : *allowed)
        if (contains(r->values, v)) both.push_back(v);
      allowed = std::move(both);
      break;
    }
    case op::not_equals:
    case op::not_in:
      excluded.insert(excluded.end(), r->values.begin(), r->values.end());
      break;
    case op::exists: present = true; break;
    case op::does_not_exist: absent = true; break;
    case op::greater_than:
    case op::less_than: {
      present = true;
      auto bound = parse_int64(r->values.front());
      if (!bound) return false; // the parser refuses this; matches nothing
      if (r->oper == op::greater_than)
        above = above ? std::max(*above, *bound) : *bound;
      else
        below = below ? std::min(*below, *bound) : *bound;
      break;
    }
    }
  }
  if (!present) return true; // the key left out meets !=, notin and !key
  if (absent) return false;
  bool numeric = above || below;
  if (allowed) {
    for (const auto& v : *allowed) {
      if (contains(excluded, v)) continue;
      if (!numeric) return true;
      auto n = parse_int64(v);
      if (n && (!above || *n > *above) && (!below || *n < *below)) return true;
    }
    return false;
  }
  // Any integer strictly between the bounds will do: `7` and `07` are one
  // number, so excluded texts never exclude a number. A label value starts
  // with a digit or letter: no number below 0 is one.
  if (above && *above == std::numeric_limits<int64_t>::max()) return false;
  if (below && *below <= 0) return false;
  if (above && below) return *below - 1 > *above;
  return true;
}

} // namespace

std::string selector::contradiction(const selector& also) const {
  std::map<std::string, std::vector<const requirement*>> by_key;
  for (const auto* reqs : {&reqs_, &also.reqs_})
    for (const auto& r : *reqs)
      by_key[r.key].push_back(&r);
  for (const auto& [key, reqs] : by_key) {
    if (satisfiable(reqs)) continue;
    std::vector<std::string> texts;
    for (const auto* r : reqs)
      texts.push_back(r->to_string());
    return "label '" + key + "' cannot meet all of " + join_sorted(texts, ", ");
  }
  return {};
}

} // namespace polymesh
