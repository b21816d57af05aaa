// Reopening, dropping and logging (mirrors python/tests/test_lifecycle.py).
package covey

import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.assertFalse
import org.junit.jupiter.api.Test

class Collect : Logger {
    val records = CopyOnWriteArrayList<LogRecord>()

    override fun log(record: LogRecord) {
        records.add(record)
    }
}

class ThrowingLogger : Logger {
    override fun log(record: LogRecord) = throw IllegalStateException("logger bug")
}

class LifecycleTest : CoveyTestBase() {

    @Test
    fun `shutdown then reopen keeps history`() = coveyTest { nodes ->
        val d = nodes.dir("n")
        val a = nodes.open(d, durability = Durability.FULL)
        val nodeId = a.nodeId()
        val g = a.joinPassphrase(PASS, "history")
        val metas = (0 until 10).map { a.publish(g.groupId, "entry $it".toByteArray(), "c$it") }
        a.shutdown()

        val b = nodes.open(d)
        assertEquals(nodeId, b.nodeId())
        assertEquals(listOf(g.groupId), b.groups().map { it.groupId })
        val entries = b.entries(g.groupId, 0uL, 100u)
        assertEquals(metas.map { it.entryId }, entries.map { it.entryId })
        assertContentEquals("entry 3".toByteArray(), entries[3].payload)
        // Idempotency survives the restart too.
        assertEquals(metas[0], b.publish(g.groupId, "entry 0".toByteArray(), "c0"))
        assertEquals(11uL, b.publish(g.groupId, "entry 10".toByteArray()).seq)
    }

    @Test
    fun `a closed node is shut down in the background`() = coveyTest { nodes ->
        // close() without shutdown() frees the handle; Rust's Drop shuts the node down.
        val d = nodes.dir("n")
        val node = Node.open(config(d))
        val nodeId = node.nodeId()
        node.close()

        val again = eventually("the closed node to release its data dir") {
            try {
                Node.open(config(d))
            } catch (e: CoveyException.Conflict) {
                null
            }
        }
        nodes.track(again)
        assertEquals(nodeId, again.nodeId())
    }

    @Test
    fun `logs reach a Kotlin logger`() = coveyTest { nodes ->
        // A throwing logger is harmless.
        setLogger(ThrowingLogger(), LogLevel.INFO)
        Node.open(config(nodes.dir("a"))).let { it.shutdown(); it.close() }

        val logs = Collect()
        setLogger(logs, LogLevel.INFO)
        Node.open(config(nodes.dir("b"))).let { it.shutdown(); it.close() }
        setLogger(Collect(), LogLevel.ERROR) // quiet for the other tests
        val records = logs.records.toList()
        val opened = records.filter { "open" in it.message && it.target.startsWith("covey_core") }
        assertTrue(opened.isNotEmpty(), records.map { it.message }.toString())
        assertTrue(records.all { it.level in setOf(LogLevel.ERROR, LogLevel.WARN, LogLevel.INFO) })
    }

    @Test
    fun `config defaults send nothing`() {
        val cfg = NodeConfig(dataDir = "/tmp/x")
        assertNull(cfg.bindAddr)
        assertEquals(emptyList(), cfg.bootstrap)
        assertEquals(emptyList(), cfg.relayUrls)
        assertNull(cfg.keyStore)
        assertNull(cfg.durability)
        assertFalse(cfg.natTraversal)
        assertNull(cfg.maxPayloadBytes)
        assertNull(cfg.dhtRendezvous)
        assertNull(cfg.dhtMaxValueBytes)
        val err = CoveyException.NotFound("gone")
        assertEquals("gone", err.detail)
    }
}
