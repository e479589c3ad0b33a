#include "tapdisk-map/xen/toollog_bridge.h"

#include <cstdio>

extern "C" {
#include <xentoollog.h>
}

namespace tapmap::xen {

// The xentoollog_logger must be the first member: the libraries call back with a
// pointer to it, which is converted back to Impl.
struct ToollogBridge::Impl {
  xentoollog_logger vtable;
  Logger logger;

  static void VMessage(xentoollog_logger* self, xentoollog_level level, int errnoval,
                       const char* context, const char* format, va_list args)
      __attribute__((format(printf, 5, 0))) {
    auto* impl = reinterpret_cast<Impl*>(self);
    if (!impl->logger.Enabled(LogLevel::kDebug)) return;
    char text[512];
    std::vsnprintf(text, sizeof(text), format, args);
    impl->logger.Debugf("%s (level %d%s%d): %s", context != nullptr ? context : "xen",
                        static_cast<int>(level), errnoval >= 0 ? ", errno " : "", errnoval, text);
  }
  static void Destroy(xentoollog_logger*) {}
};

ToollogBridge::ToollogBridge(Logger logger)
    : impl_(new Impl{xentoollog_logger{&Impl::VMessage, nullptr, &Impl::Destroy}, std::move(logger)}) {}

ToollogBridge::~ToollogBridge() = default;

xentoollog_logger* ToollogBridge::get() { return &impl_->vtable; }

}  // namespace tapmap::xen
