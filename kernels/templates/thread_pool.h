// A tiny work-claiming thread pool. The caller runs items too and waits only until every item is DONE,
// never for a worker to show up: on a busy machine a descheduled worker costs nothing but its share
// (an OpenMP barrier would stall the whole layer until the OS runs it again). A forked child that
// inherits no workers still finishes every call on its own.
#include <atomic>
#include <thread>
#include <vector>
#include <mutex>
#include <pthread.h>
#include <chrono>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZD_PAUSE() _mm_pause()
#else
#define ZD_PAUSE() ((void)0)
#endif

typedef void (*zd_item_fn)(void* ctx, int item);

struct zd_pool {
  // state = epoch << 32 | next unclaimed item; a claim is a CAS, so stale workers cannot claim new work.
  std::atomic<uint64_t> state{0};
  std::atomic<int> done{0};
  std::atomic<int> wake{0};          // futex word: bumped on every publish
  std::atomic<int> sleepers{0};
  zd_item_fn fn = nullptr;
  void* ctx = nullptr;
  int n_items = 0;
  std::vector<std::thread> workers;  // grown on demand, detached at exit
  std::mutex grow;
  std::mutex one_job;                // one job at a time per process: callers from several threads take turns
};

// Never destroyed (workers may outlive static destructors). A forked child starts a fresh pool: it inherits
// none of the parent's threads, and possibly a mutex some other parent thread held at the fork.
static zd_pool* zd_pool_ptr = nullptr;
static void zd_pool_after_fork() { zd_pool_ptr = new zd_pool(); }
static zd_pool& zd_the_pool() {
  static bool once = [] {
    zd_pool_ptr = new zd_pool();
    pthread_atfork(nullptr, nullptr, zd_pool_after_fork);
    return true;
  }();
  (void)once;
  return *zd_pool_ptr;
}

static void zd_futex_wait(std::atomic<int>* word, int value) {
#if defined(__linux__)
  syscall(SYS_futex, (int*)word, FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
#else
  (void)word; (void)value; std::this_thread::yield();
#endif
}

static void zd_futex_wake(std::atomic<int>* word) {
#if defined(__linux__)
  syscall(SYS_futex, (int*)word, FUTEX_WAKE_PRIVATE, 1 << 30, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}

// Claim and run items of the job published as `epoch` until none are left.
static void zd_drain(zd_pool& p, uint32_t epoch, zd_item_fn fn, void* ctx, int n) {
  uint64_t cur = p.state.load(std::memory_order_acquire);
  while ((uint32_t)(cur >> 32) == epoch && (int)(cur & 0xffffffffu) < n) {
    if (p.state.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel)) {
      fn(ctx, (int)(cur & 0xffffffffu));
      p.done.fetch_add(1, std::memory_order_acq_rel);
      cur = p.state.load(std::memory_order_acquire);
    }
  }
}

static void zd_worker(zd_pool* p) {
  uint32_t seen = 0;
  std::chrono::steady_clock::time_point spin_start;
  for (;;) {
    int spins = 0;
    int w = p->wake.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t s = p->state.load(std::memory_order_acquire);
      const uint32_t epoch = (uint32_t)(s >> 32);
      if (epoch != seen) {
        seen = epoch;
        zd_item_fn fn = p->fn;
        void* ctx = p->ctx;
        const int n = p->n_items;
        zd_drain(*p, epoch, fn, ctx, n);
        spins = 0;
        w = p->wake.load(std::memory_order_acquire);
        continue;
      }
      // Spin ~100 microseconds (the next layer usually comes sooner), then sleep on the futex.
      if (++spins & 63) { ZD_PAUSE(); continue; }
      if (spins == 64) spin_start = std::chrono::steady_clock::now();
      if (std::chrono::steady_clock::now() - spin_start < std::chrono::microseconds(100)) continue;
      p->sleepers.fetch_add(1, std::memory_order_acq_rel);
      if ((uint32_t)(p->state.load(std::memory_order_acquire) >> 32) == seen) zd_futex_wait(&p->wake, w);
      p->sleepers.fetch_sub(1, std::memory_order_acq_rel);
      w = p->wake.load(std::memory_order_acquire);
      spins = 0;
    }
  }
}

// Run fn(ctx, 0..n-1) on the caller plus up to threads-1 workers; returns when all items are done.
static void zd_parallel(int threads, int n, zd_item_fn fn, void* ctx) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    for (int i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  zd_pool& p = zd_the_pool();
  if ((int)p.workers.size() < threads - 1) {
    std::lock_guard<std::mutex> lock(p.grow);
    while ((int)p.workers.size() < threads - 1) {
      p.workers.emplace_back(zd_worker, &p);
      p.workers.back().detach();
    }
  }
  std::lock_guard<std::mutex> lock(p.one_job);
  const uint32_t epoch = (uint32_t)(p.state.load(std::memory_order_acquire) >> 32) + 1;
  p.fn = fn;
  p.ctx = ctx;
  p.n_items = n;
  p.done.store(0, std::memory_order_release);
  p.state.store((uint64_t)epoch << 32, std::memory_order_release);
  p.wake.fetch_add(1, std::memory_order_acq_rel);
  if (p.sleepers.load(std::memory_order_acquire) > 0) zd_futex_wake(&p.wake);
  zd_drain(p, epoch, fn, ctx, n);
  int spins = 0;
  while (p.done.load(std::memory_order_acquire) < n) {
    if (++spins < 1000) ZD_PAUSE(); else std::this_thread::yield();
  }
}
