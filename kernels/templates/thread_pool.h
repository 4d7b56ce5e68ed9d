// Parallel items, run one of two ways:
// - inside a process that already runs GNU OpenMP (torch does), on THAT runtime's threads (GOMP_parallel,
//   looked up at run time, never linked): torch's idle OpenMP workers spin for milliseconds after each torch
//   op, so a second pool of our own would fight them for the cores. One set of threads per process instead.
// - otherwise on a tiny work-claiming pool of our own. The caller runs items too and waits only until every
//   item is DONE, never for a worker to show up. A forked child that inherits no workers still finishes
//   every call on its own (and never uses the inherited OpenMP state: libgomp is not fork-safe).
#include <atomic>
#include <thread>
#include <vector>
#include <mutex>
#include <pthread.h>
#include <dlfcn.h>
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
static std::atomic<bool> zd_forked{false};
static void zd_after_fork_child() {
  zd_forked.store(true);
  if (zd_pool_ptr) zd_pool_ptr = new zd_pool();
}
__attribute__((unused)) static const int zd_fork_hook = pthread_atfork(nullptr, nullptr, zd_after_fork_child);  // at library load
static zd_pool& zd_the_pool() {
  static bool once = [] {
    if (!zd_pool_ptr) zd_pool_ptr = new zd_pool();
    return true;
  }();
  (void)once;
  return *zd_pool_ptr;
}

// GOMP_parallel of the libgomp already loaded in this process, or null: none loaded, ZD_KERNEL_THREADS=own
// in the environment (this library's own pool, for comparisons), or a child forked after this library was
// loaded (the parent's OpenMP threads do not exist there; torch's own OpenMP ops hang in such a child).
typedef void (*zd_gomp_parallel_fn)(void (*)(void*), void*, unsigned, unsigned);
static zd_gomp_parallel_fn zd_gomp() {
  static zd_gomp_parallel_fn fn = [] {
    const char* env = getenv("ZD_KERNEL_THREADS");
    if (env && strcmp(env, "own") == 0) return (zd_gomp_parallel_fn) nullptr;
    void* lib = dlopen("libgomp.so.1", RTLD_NOLOAD | RTLD_LAZY);
    return lib ? (zd_gomp_parallel_fn)dlsym(lib, "GOMP_parallel") : (zd_gomp_parallel_fn) nullptr;
  }();
  return zd_forked.load(std::memory_order_relaxed) ? nullptr : fn;
}

// omp_get_thread_num of the same libgomp (0 = the caller), or null without one.
typedef int (*zd_omp_thread_num_fn)(void);
static zd_omp_thread_num_fn zd_omp_thread_num() {
  static zd_omp_thread_num_fn fn = [] {
    void* lib = dlopen("libgomp.so.1", RTLD_NOLOAD | RTLD_LAZY);
    return lib ? (zd_omp_thread_num_fn)dlsym(lib, "omp_get_thread_num") : (zd_omp_thread_num_fn) nullptr;
  }();
  return fn;
}

// Items are split into one contiguous range per team thread, taken in the same order on every call, so a thread
// reads mostly what it wrote in the previous layer: on CIFAR maps (~25 us layers) dynamic claiming moved each
// layer's activations between the cores' caches and two threads ran slower than one. A thread done with its own
// range takes items from the others' (a late or descheduled team thread never stalls the call).
struct alignas(64) zd_range { std::atomic<int> next; int end; };
static const int ZD_MAX_TEAM = 64;
struct zd_team_job {
  zd_item_fn fn; void* ctx; int parts;
  pthread_t caller; std::chrono::steady_clock::time_point caller_done;
  zd_range ranges[ZD_MAX_TEAM];
  zd_team_job(zd_item_fn f, void* c, int n, int team) : fn(f), ctx(c), parts(team), caller(pthread_self()) {
    for (int t = 0; t < team; ++t) {
      ranges[t].next.store((int)((long long)n * t / team), std::memory_order_relaxed);
      ranges[t].end = (int)((long long)n * (t + 1) / team);
    }
  }
};
static void zd_team_body(void* data) {
  zd_team_job* job = (zd_team_job*)data;
  zd_omp_thread_num_fn rank = zd_omp_thread_num();
  const int me = (rank ? rank() : 0) % job->parts;
  for (int k = 0; k < job->parts; ++k) {
    zd_range& r = job->ranges[(me + k) % job->parts];
    for (int i = r.next.fetch_add(1, std::memory_order_relaxed); i < r.end;
         i = r.next.fetch_add(1, std::memory_order_relaxed))
      job->fn(job->ctx, i);
  }
  if (pthread_equal(pthread_self(), job->caller)) job->caller_done = std::chrono::steady_clock::now();
}

// Stall guard. An OpenMP region ends in a barrier that waits for every team thread: on a machine busy with
// other work, a descheduled team thread stalls each region for a scheduler time slice (ResNet-18, 2 threads,
// one other busy process: median 328 ms on OpenMP threads vs 39 ms on the own pool, which never waits for a
// thread that has not shown up). When the caller, its items done, waited > 2 ms at that barrier in a quarter of
// the last 64 calls, the own pool runs the calls of the next 2 seconds, then OpenMP is tried again.
// On a quiet machine the own pool is the slower one (ResNet-18 4/9x0.5, 2 threads: 13-14 ms against 9.7-11), so
// the guard must not switch on a VM's occasional hiccups: it used to take 3 stalls in 64 calls and 2048 calls of
// own pool, which a compile stage's g++ runs or a few slow wake-ups of idle OpenMP threads (the first calls after
// a switch, not counted now) kept re-triggering: a job's speed report then measured the slow pool
// (docs/benchmarks/kernels.md, session 11).
static const int ZD_STALL_GRACE_CALLS = 32;
static const int ZD_STALLS_TO_SWITCH = 16;
static const std::chrono::seconds ZD_OWN_POOL_STRETCH{2};
static std::atomic<int> zd_calls{0}, zd_stalls{0}, zd_grace{ZD_STALL_GRACE_CALLS};
static std::atomic<long long> zd_own_until{0};  // steady_clock ticks; 0 = OpenMP
static bool zd_use_gomp() {
  const long long until = zd_own_until.load(std::memory_order_relaxed);
  if (until == 0) return true;
  if (std::chrono::steady_clock::now().time_since_epoch().count() < until) return false;
  zd_own_until.store(0, std::memory_order_relaxed);
  zd_grace.store(ZD_STALL_GRACE_CALLS, std::memory_order_relaxed);
  return true;
}
static void zd_note_barrier_wait(std::chrono::steady_clock::duration wait) {
  if (zd_grace.load(std::memory_order_relaxed) > 0) {
    zd_grace.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  if (wait > std::chrono::milliseconds(2) && zd_stalls.fetch_add(1, std::memory_order_relaxed) + 1 >= ZD_STALLS_TO_SWITCH) {
    const auto until = std::chrono::steady_clock::now() + ZD_OWN_POOL_STRETCH;
    zd_own_until.store(until.time_since_epoch().count(), std::memory_order_relaxed);
    zd_stalls.store(0, std::memory_order_relaxed);
    zd_calls.store(0, std::memory_order_relaxed);
  }
  if (zd_calls.fetch_add(1, std::memory_order_relaxed) + 1 >= 64) {
    zd_calls.store(0, std::memory_order_relaxed);
    zd_stalls.store(0, std::memory_order_relaxed);
  }
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
  zd_gomp_parallel_fn gomp = zd_gomp();
  if (gomp && zd_use_gomp()) {
    const int team = threads < n ? (threads < ZD_MAX_TEAM ? threads : ZD_MAX_TEAM) : n;
    zd_team_job job(fn, ctx, n, team);
    gomp(zd_team_body, &job, (unsigned)team, 0);
    zd_note_barrier_wait(std::chrono::steady_clock::now() - job.caller_done);
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
