#include "xenstore-tools/cli/output.h"

#include <algorithm>
#include <stdexcept>

namespace tapmap::cli {

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> cells) {
  if (cells.size() != columns_.size()) {
    throw std::logic_error("table row has " + std::to_string(cells.size()) + " cells, expected " +
                           std::to_string(columns_.size()));
  }
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].title.size();
    for (const auto& row : rows_) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string& cell = cells[c];
      size_t pad = width[c] - cell.size();
      if (c > 0) text += "  ";
      if (columns_[c].numeric) {
        text.append(pad, ' ');
        text += cell;
      } else {
        text += cell;
        if (c + 1 < cells.size()) text.append(pad, ' ');
      }
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text;
    out += '\n';
  };
  std::vector<std::string> titles;
  for (const auto& col : columns_) titles.push_back(col.title);
  line(titles);
  for (const auto& row : rows_) line(row);
  return out;
}

void PrintJson(std::FILE* out, const Json& doc, bool pretty) {
  std::string text = pretty ? doc.dump(2) : doc.dump();
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

Json ErrorJson(const Status& status) {
  Json err;
  err["code"] = std::string(StatusCodeName(status.code()));
  err["message"] = status.message();
  Json doc;
  doc["error"] = err;
  return doc;
}

}  // namespace tapmap::cli
