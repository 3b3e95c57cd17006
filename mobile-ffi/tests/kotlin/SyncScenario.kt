// The Kotlin bindings (package dev.concord) against a real `concord serve`, on the JVM with JNA.
//
// Starts its own server from $CONCORD_BIN on 127.0.0.1:0 (stopped in `finally`), then runs the
// scenarios below with coroutines for the async calls. Prints one line per scenario and
// "kotlin: N passed, M failed"; exits non-zero on any failure. Built and run by
// mobile-ffi/scripts/test.sh.

import dev.concord.ChangeEvent
import dev.concord.ChangeListener
import dev.concord.ChangeOrigin
import dev.concord.ConcordException
import dev.concord.DeletedEvent
import dev.concord.DeletedListener
import dev.concord.Durability
import dev.concord.Edit
import dev.concord.Repo
import dev.concord.SyncStatus
import dev.concord.SyncStatusListener
import dev.concord.Value
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import java.io.File
import java.nio.file.Files
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess

const val WAIT_MS: ULong = 15_000u

/** `concord serve --bind 127.0.0.1:0 --data <tmp> --dev`: its WebSocket URL and development token. */
class Server(binary: String) : AutoCloseable {
    private val data = Files.createTempDirectory("concord-ffi-kt-server").toFile()
    private val process: Process = ProcessBuilder(binary, "serve", "--bind", "127.0.0.1:0", "--data", data.path, "--dev")
        .redirectError(ProcessBuilder.Redirect.DISCARD)
        .start()
    var url: String = ""
        private set
    var token: String? = null
        private set

    private val hook = Thread { stop() }

    init {
        Runtime.getRuntime().addShutdownHook(hook) // a killed JVM (SIGTERM) still stops the server
        val lines = LinkedBlockingQueue<String>()
        Thread {
            process.inputStream.bufferedReader().useLines { seq -> seq.forEach { lines.put(it) } }
        }.apply { isDaemon = true }.start()
        val listening = Regex("""concord listening on http://\S+ \(WebSocket: (ws://\S+)\)""")
        val devToken = Regex("""development token [^:]*: (\S+)""")
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30)
        while (token == null) {
            var left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())
            if (url.isNotEmpty()) left = minOf(left, 1000)
            if (left <= 0) break
            val line = lines.poll(left, TimeUnit.MILLISECONDS) ?: break
            listening.find(line)?.let { url = it.groupValues[1] }
            devToken.find(line)?.let { token = it.groupValues[1] }
        }
        if (url.isEmpty()) {
            close()
            throw IllegalStateException("concord serve did not print its address within 30 s")
        }
    }

    override fun close() {
        runCatching { Runtime.getRuntime().removeShutdownHook(hook) }
        stop()
    }

    private fun stop() {
        process.destroy() // SIGTERM
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS)
        }
        data.deleteRecursively()
    }
}

class Changes : ChangeListener {
    val events = CopyOnWriteArrayList<ChangeEvent>()
    override fun onChange(event: ChangeEvent) {
        events.add(event)
    }
    fun remote() = events.filter { it.origin == ChangeOrigin.REMOTE }
}

class Deletions : DeletedListener {
    val events = CopyOnWriteArrayList<DeletedEvent>()
    override fun onDeleted(event: DeletedEvent) {
        events.add(event)
    }
    fun remote() = events.filter { it.origin == ChangeOrigin.REMOTE }
}

class Statuses : SyncStatusListener {
    val seen = CopyOnWriteArrayList<SyncStatus>()
    override fun onStatus(status: SyncStatus) {
        seen.add(status)
    }
}

fun check(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

suspend fun eventually(what: String, timeoutMs: Long = 15_000, condition: () -> Boolean) {
    val end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs)
    while (!condition()) {
        if (System.nanoTime() > end) throw AssertionError("timed out after $timeoutMs ms waiting for $what")
        delay(50)
    }
}

inline fun <reified E : ConcordException> expectError(what: String, block: () -> Unit) {
    try {
        block()
    } catch (e: ConcordException) {
        check(e is E) { "$what: expected ${E::class.simpleName}, got ${e::class.simpleName}: ${e.message}" }
        return
    }
    throw AssertionError("$what: no exception")
}

class Scenarios(private val server: Server, private val dir: File) {
    private val repos = mutableListOf<Repo>()

    private suspend fun open(name: String, online: Boolean = true): Repo {
        val servers = if (online) listOf(server.url) else listOf()
        return Repo.open(File(dir, "$name.db").path, servers, server.token).also { repos.add(it) }
    }

    suspend fun closeAll() {
        repos.forEach { it.shutdown(); it.close() }
        repos.clear()
    }

    /** Alice online and Bob offline edit the same document concurrently; both converge. */
    suspend fun offlineEditsConverge() {
        val alice = open("alice")
        val doc = alice.create()
        doc.put("", """{"title": "groceries", "items": []}""")
        doc.waitSynced(WAIT_MS)
        val url = doc.url()

        val bob = open("bob")
        check(bob.find(url).getJson("") == """{"items":[],"title":"groceries"}""") { "Bob's first copy" }
        bob.shutdown()

        val bobOffline = open("bob", online = false)
        val offline = bobOffline.find(url)
        offline.insert("items", 0u, "\"milk\"")
        offline.spliceText("title", 0u, 0u, "weekly ")
        expectError<ConcordException.Network>("waitSynced offline") { offline.waitSynced(500u) }
        bobOffline.shutdown()

        val changes = Changes()
        val sub = doc.subscribeChanges(changes)
        doc.put("owner", "\"alice\"")
        doc.waitSynced(WAIT_MS)

        val bobAgain = open("bob")
        val bobDoc = bobAgain.find(url)
        bobDoc.waitSynced(WAIT_MS)
        eventually("Alice's listener to see Bob's change") { changes.remote().isNotEmpty() }
        eventually("identical heads") { doc.heads() == bobDoc.heads() }
        val expected = """{"items":["milk"],"owner":"alice","title":"weekly groceries"}"""
        check(doc.getJson("") == expected) { "Alice has ${doc.getJson("")}" }
        check(bobDoc.getJson("") == expected) { "Bob has ${bobDoc.getJson("")}" }
        check(doc.get("title") == Value.Text("weekly groceries")) { "typed read: ${doc.get("title")}" }
        check(changes.events.any { it.origin == ChangeOrigin.LOCAL }) { "local change events" }
        sub.cancel()
    }

    /** Typed values, batches and counters. */
    suspend fun typedValues() {
        val repo = open("typed", online = false)
        val doc = repo.create()
        doc.apply(listOf(
            Edit.Put("", """{"todos": [{"title": "milk", "done": false}], "ratio": 0.5}"""),
            Edit.Increment("visits", 3L),
            Edit.Insert("todos", 1u, """{"title": "eggs", "done": true}"""),
        ))
        check(doc.get("visits") == Value.Counter(3L)) { "counter: ${doc.get("visits")}" }
        check(doc.get("todos/1/done") == Value.Bool(true)) { "bool: ${doc.get("todos/1/done")}" }
        check(doc.get("ratio") == Value.Float(0.5)) { "float: ${doc.get("ratio")}" }
        check(doc.get("missing") == null) { "missing is null" }
        val root = doc.get("")
        check(root is Value.Object && root.entries.keys == setOf("todos", "ratio", "visits")) { "root: $root" }
        doc.waitDurable(Durability.LOCAL, WAIT_MS)
    }

    /** Invalid input arrives as ConcordException subclasses, never a crash. */
    suspend fun errorsAreExceptions() {
        expectError<ConcordException.InvalidUrl>("bad server URL") {
            Repo.open(File(dir, "x.db").path, listOf("http://nope"), null)
        }
        expectError<ConcordException.InvalidUrl>("bad server URL, blocking constructor") {
            Repo(File(dir, "x.db").path, listOf("ws://"), null)
        }
        val repo = open("errors", online = false)
        val doc = repo.create()
        expectError<ConcordException.InvalidUrl>("bad document URL") { repo.find("automerge:###") }
        expectError<ConcordException.NotFound>("unknown document") {
            repo.find("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu")
        }
        expectError<ConcordException.InvalidPath>("bad path") { doc.put("a//b", "1") }
        expectError<ConcordException.InvalidJson>("bad JSON") { doc.put("a", "{oops") }
        expectError<ConcordException.WrongType>("increment text") {
            doc.put("t", "\"x\""); doc.increment("t", 1L)
        }
        expectError<ConcordException.InvalidArgument>("empty presence") { doc.broadcast(byteArrayOf()) }
        repo.shutdown()
        expectError<ConcordException.Closed>("after shutdown") { doc.heads() }
    }

    /**
     * Deletion: Alice deletes a document Bob has open (Bob's listener hears of it, his copy is
     * gone); Carol, offline, edits it and is told when she reconnects (her edit is refused).
     */
    suspend fun deletionPropagates() {
        val alice = open("alice-del")
        val doc = alice.create()
        doc.put("title", "\"shared\"")
        doc.waitSynced(WAIT_MS)
        val url = doc.url()
        val bob = open("bob-del")
        val bobDoc = bob.find(url)
        val bobHears = Deletions()
        bobDoc.subscribeDeleted(bobHears)
        val carol = open("carol-del")
        carol.find(url).waitSynced(WAIT_MS)
        carol.shutdown()

        doc.delete()
        expectError<ConcordException.Deleted>("Alice reads her deleted copy") { doc.getJson("") }
        expectError<ConcordException.Deleted>("deleting twice") { doc.deleteDocument() }
        eventually("the server confirms") { alice.deletion(url)?.confirmed == true }
        eventually("Bob's listener hears of it") { bobHears.remote().size == 1 }
        check(bobHears.events[0].url == url) { "event url ${bobHears.events[0].url}" }
        expectError<ConcordException.Deleted>("Bob reads") { bobDoc.getJson("") }
        expectError<ConcordException.Deleted>("Bob finds") { bob.find(url) }
        val purgeBy = System.nanoTime() + TimeUnit.SECONDS.toNanos(15)
        while (url in bob.documentUrls()) { // the purge is a storage write after the event
            check(System.nanoTime() < purgeBy) { "Bob's stored copy is purged" }
            delay(50)
        }

        val carolOffline = open("carol-del", online = false)
        carolOffline.find(url).put("title", "\"offline edit\"") // committed locally
        carolOffline.shutdown()
        val carolAgain = open("carol-del")
        val carolHears = Deletions()
        carolAgain.subscribeDeleted(carolHears)
        try {
            carolAgain.find(url) // the local copy first; the server then says it is deleted
        } catch (e: ConcordException.Deleted) {
            // the server's answer came first
        }
        eventually("Carol is told her edit is refused") { carolHears.remote().map { it.url } == listOf(url) }
        expectError<ConcordException.Deleted>("Carol finds") { carolAgain.find(url) }
    }

    /** History (paging, diff, restore as a new change) and the server's list of documents. */
    suspend fun historyAndLists() {
        val repo = open("history")
        val doc = repo.create()
        doc.put("", """{"title": "v1"}""")
        val v1 = doc.heads()
        doc.put("title", "\"v2\"")
        val page = doc.history()
        check(page.total == page.changes.size.toULong() && page.changes[0].hash == doc.heads()[0]) { "page $page" }
        val first = doc.history(limit = 1u)
        check(first.changes.size == 1 && first.next == first.changes[0].hash) { "first page $first" }
        val second = doc.history(limit = 1u, cursor = first.next)
        check(second.changes[0].hash == page.changes[1].hash) { "second page $second" }
        check(doc.diff(v1, doc.heads()).contains("\"action\":\"put\"")) { "diff ${doc.diff(v1, doc.heads())}" }
        check(doc.restore(v1)) { "restore wrote a change" }
        check(doc.getJson("") == """{"title":"v1"}""") { "restored ${doc.getJson("")}" }
        check(doc.history().total == page.total + 1uL) { "restore is a new change on top" }
        expectError<ConcordException.InvalidArgument>("restore unknown heads") {
            doc.restore(listOf(v1[0].dropLast(4) + "1111"))
        }
        doc.waitSynced(WAIT_MS)
        check(doc.url() in repo.listLocal()) { "listed locally" }
        val remote = repo.listRemote(limit = 100u)
        check(remote.documents.any { it.url == doc.url() }) { "listed by the server: $remote" }
    }

    /** The sync-status listener, and cancelling a coroutine that waits on the network. */
    suspend fun statusAndCancellation() {
        val repo = open("status")
        val statuses = Statuses()
        val sub = repo.subscribeSyncStatus(statuses)
        eventually("Connected") { statuses.seen.any { it is SyncStatus.Connected } }
        sub.cancel()
        check(!sub.isActive()) { "cancelled" }

        val dead = Repo.open(File(dir, "dead.db").path, listOf("ws://127.0.0.1:9/sync"), null).also { repos.add(it) }
        val doc = dead.create()
        doc.put("a", "1") // never waits for the network
        val started = System.nanoTime()
        val result = withTimeoutOrNull(300) { doc.waitSynced(60_000u) }
        val ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started)
        check(result == null && ms < 5_000) { "cancellation took $ms ms" }
    }
}

fun main() {
    val bin = System.getenv("CONCORD_BIN") ?: run {
        System.err.println("CONCORD_BIN must name the concord binary")
        exitProcess(2)
    }
    var passed = 0
    var failed = 0
    val dir = Files.createTempDirectory("concord-ffi-kt").toFile()
    Server(bin).use { server ->
        val scenarios = Scenarios(server, dir)
        val all = listOf<Pair<String, suspend () -> Unit>>(
            "offline edits converge with concurrent online edits" to scenarios::offlineEditsConverge,
            "typed values, batches, counters" to scenarios::typedValues,
            "invalid input raises ConcordException" to scenarios::errorsAreExceptions,
            "sync status listener and coroutine cancellation" to scenarios::statusAndCancellation,
            "deletion reaches other replicas and refuses offline edits" to scenarios::deletionPropagates,
            "history, diff, restore, local and remote lists" to scenarios::historyAndLists,
        )
        runBlocking {
            for ((name, scenario) in all) {
                val t = System.nanoTime()
                try {
                    scenario()
                    passed++
                    println("ok   $name (${TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t)} ms)")
                } catch (e: Throwable) {
                    failed++
                    println("FAIL $name: $e")
                    e.printStackTrace()
                } finally {
                    scenarios.closeAll()
                }
            }
        }
    }
    dir.deleteRecursively()
    println("kotlin: $passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
