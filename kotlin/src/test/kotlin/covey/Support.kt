// Shared test support: nodes on temporary data dirs bound to 127.0.0.1, a recording listener,
// polling helpers with real deadlines, and a test wrapper that can never hang.
//
// Run the suite inside a loopback-only network namespace (kotlin/run-tests.sh does): every
// node here binds 127.0.0.1 and dials only the other nodes of the same test.
package covey

import java.io.File
import java.nio.file.Path
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.time.Duration
import kotlin.time.Duration.Companion.milliseconds
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.TimeoutCancellationException
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.io.TempDir

const val PASS = "correct horse battery staple"

/** Generous: a cold CI machine, two cores, Argon2id at 64 MiB per join. */
val DEADLINE: Duration = 30.seconds

/** The whole of one test, cleanup excluded. */
val TEST_TIMEOUT: Duration = 150.seconds

/** A loopback-only config for [dataDir]. */
fun config(
    dataDir: String,
    keyStore: KeyStore? = null,
    durability: Durability? = null,
    maxPayloadBytes: ULong? = null,
    bootstrap: List<String> = listOf(),
    relayUrls: List<String> = listOf(),
    dhtRendezvous: Boolean? = null,
    dhtMaxValueBytes: ULong? = null,
): NodeConfig = NodeConfig(
    dataDir = dataDir,
    bindAddr = "127.0.0.1:0",
    bootstrap = bootstrap,
    relayUrls = relayUrls,
    keyStore = keyStore,
    durability = durability,
    maxPayloadBytes = maxPayloadBytes,
    dhtRendezvous = dhtRendezvous,
    dhtMaxValueBytes = dhtMaxValueBytes,
)

/** Polls [probe] until it returns non-null, failing after [deadline]. */
suspend fun <T : Any> eventually(
    what: String,
    deadline: Duration = DEADLINE,
    probe: suspend () -> T?,
): T {
    val start = TimeSource.Monotonic.markNow()
    while (true) {
        probe()?.let { return it }
        if (start.elapsedNow() > deadline) {
            throw AssertionError("timed out after $deadline waiting for $what")
        }
        delay(50.milliseconds)
    }
}

/** Polls a plain condition until it holds. */
suspend fun waitUntil(what: String, deadline: Duration = DEADLINE, cond: () -> Boolean) {
    eventually(what, deadline) { if (cond()) Unit else null }
}

/** Makes [b] dial [a]. */
suspend fun link(a: Node, b: Node) = b.addPeer(a.addr())

suspend fun entriesOf(node: Node, groupId: String): List<Entry> =
    node.entries(groupId, 0uL, 1000u)

/** An event listener implemented in Kotlin that keeps every event (called from Rust threads). */
class Recorder : EventListener {
    private val received = CopyOnWriteArrayList<Event>()

    override fun onEvent(event: Event) {
        received.add(event)
    }

    val events: List<Event> get() = received.toList()

    inline fun <reified E : Event> of(): List<E> = events.filterIsInstance<E>()
}

/** Opens nodes for one test and shuts every one down (and frees it) at its end. */
class Nodes(private val root: Path) {
    private val opened = CopyOnWriteArrayList<Node>()
    private val subscriptions = CopyOnWriteArrayList<Subscription>()
    private var count = 0

    fun dir(name: String? = null): String {
        val n = name ?: "node${++count}"
        return root.resolve(n).toString()
    }

    suspend fun open(
        dataDir: String? = null,
        keyStore: KeyStore? = null,
        maxPayloadBytes: ULong? = null,
        durability: Durability? = null,
        dhtRendezvous: Boolean? = null,
        dhtMaxValueBytes: ULong? = null,
        bootstrap: List<String> = listOf(),
    ): Node {
        val node = Node.open(
            config(
                dataDir ?: dir(),
                keyStore = keyStore,
                maxPayloadBytes = maxPayloadBytes,
                durability = durability,
                bootstrap = bootstrap,
                dhtRendezvous = dhtRendezvous,
                dhtMaxValueBytes = dhtMaxValueBytes,
            ),
        )
        opened.add(node)
        return node
    }

    /** Tracks a node opened elsewhere so it is shut down at the end too. */
    fun track(node: Node): Node = node.also { opened.add(it) }

    fun subscribe(node: Node, listener: EventListener): Subscription =
        node.subscribe(listener).also { subscriptions.add(it) }

    suspend fun close() {
        for (sub in subscriptions) {
            sub.cancel()
            sub.close()
        }
        for (node in opened) {
            try {
                node.shutdown()
            } catch (e: CoveyException) {
                System.err.println("cleanup: shutdown failed: $e")
            }
            node.close()
        }
    }
}

/** Fails early, with the fix, when the cdylib is not where surefire says it is. */
object CoveyLibrary {
    val file: File by lazy {
        val dir = System.getProperty("jna.library.path")
            ?: error("jna.library.path is not set: run the suite through kotlin/pom.xml (mvn test)")
        val f = File(dir, System.mapLibraryName("covey_ffi"))
        check(f.isFile) {
            "no ${f.name} in $dir: build it with `cargo build --release -p covey-ffi` " +
                "(CARGO_TARGET_DIR=${System.getenv("CARGO_TARGET_DIR") ?: "<unset>"}), " +
                "or pass -Dcovey.lib.dir=DIR to mvn"
        }
        f
    }
}

abstract class CoveyTestBase {
    @TempDir
    lateinit var tmp: Path

    /**
     * Runs [body] with a fresh [Nodes] under [TEST_TIMEOUT], then closes every node it opened
     * (bounded too). A test can fail but never hang.
     */
    protected fun coveyTest(
        timeout: Duration = TEST_TIMEOUT,
        body: suspend CoroutineScope.(Nodes) -> Unit,
    ): Unit = runBlocking {
        CoveyLibrary.file
        val nodes = Nodes(tmp)
        try {
            withTimeout(timeout) { body(nodes) }
        } catch (e: TimeoutCancellationException) {
            throw AssertionError("test did not finish within $timeout", e)
        } finally {
            withContext(NonCancellable) {
                withTimeoutOrNull(30.seconds) { nodes.close() }
                    ?: System.err.println("cleanup: closing nodes took over 30 s")
            }
        }
    }
}
